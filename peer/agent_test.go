package peer_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// memberlist's Shutdown does not wait for a probe in flight; that
		// goroutine ends by itself within its probe timeout.
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
	)
}

func TestClusterFormsByJoin(t *testing.T) {
	agents := peertest.Start(t, 3, peertest.Options{})
	wait.For(t, 20*time.Second, "3 alive members everywhere", func() bool {
		return peertest.SameMembers(agents, agents)
	})
}

func TestClusterFormsByBeacon(t *testing.T) {
	peertest.MulticastOnLo(t)
	port := peertest.FreeUDPPort(t)
	a := peertest.Start(t, 3, peertest.Options{Subnet: "10.1.1.0/24", MulticastGroup: "239.255.82.101", MulticastPort: port})
	b := peertest.Start(t, 3, peertest.Options{Subnet: "10.1.2.0/24", MulticastGroup: "239.255.82.101", MulticastPort: port})
	wait.For(t, 20*time.Second, "each subnet sees exactly its own 3 agents", func() bool {
		return peertest.SameMembers(a, a) && peertest.SameMembers(b, b)
	})
}

func TestOtherSubnetCannotJoin(t *testing.T) {
	a := peertest.Start(t, 1, peertest.Options{Subnet: "10.1.1.0/24"})
	b := peertest.Start(t, 1, peertest.Options{Subnet: "10.1.2.0/24", Join: []string{a[0].GossipAddr().String()}})
	time.Sleep(3 * time.Second) // long enough for a join and a rejoin to have happened
	if len(peertest.AliveSet(a[0])) != 1 || len(peertest.AliveSet(b[0])) != 1 {
		t.Fatalf("pools of different subnets merged: %v / %v", a[0].Members(), b[0].Members())
	}
}

func TestDifferentClusterKeysNeverMeet(t *testing.T) {
	key := func(b byte) string {
		return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune(b)), 32)))
	}
	tests := []struct{ name, k1, k2 string }{
		{"two keys", key('a'), key('b')},
		{"key and none", key('a'), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := peertest.Start(t, 1, peertest.Options{ClusterKey: tt.k1})
			b := peertest.Start(t, 1, peertest.Options{ClusterKey: tt.k2, Join: []string{a[0].GossipAddr().String()}})
			// The same key does join: proves the join path works at all.
			c := peertest.Start(t, 1, peertest.Options{ClusterKey: tt.k1, Join: []string{a[0].GossipAddr().String()}})
			wait.For(t, 20*time.Second, "same-key agents meet", func() bool {
				return peertest.SameMembers([]*peer.Agent{a[0], c[0]}, []*peer.Agent{a[0], c[0]})
			})
			time.Sleep(3 * time.Second)
			if peertest.AliveSet(a[0])[b[0].ID()] || peertest.AliveSet(b[0])[a[0].ID()] || len(b[0].Members()) != 1 {
				t.Fatalf("agents with different keys saw each other: %v", b[0].Members())
			}
		})
	}
}

func TestGracefulLeaveShowsLeft(t *testing.T) {
	agents := peertest.Start(t, 3, peertest.Options{})
	wait.For(t, 20*time.Second, "cluster formed", func() bool { return peertest.SameMembers(agents, agents) })
	gone := agents[2]
	if err := gone.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	wait.For(t, 10*time.Second, "others see it left", func() bool {
		for _, a := range agents[:2] {
			found := false
			for _, m := range a.Members() {
				if m.Node == gone.ID() {
					found = m.Status == peer.StatusLeft
				}
			}
			if !found {
				return false
			}
		}
		return true
	})
}

func TestSecondAgentOnSameDataDirFails(t *testing.T) {
	cfg := peertest.Config(t, 0, peertest.Options{})
	a := peertest.StartAgent(t, cfg, false)
	_, err := peer.New(cfg, peer.Options{})
	if !errors.Is(err, peer.ErrDataDirLocked) {
		t.Fatalf("second agent: err = %v, want ErrDataDirLocked", err)
	}
	// Identity survives a restart.
	id := a.ID()
	a.Close()
	b, err := peer.New(cfg, peer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.ID() != id {
		t.Fatalf("node id changed across restart: %s -> %s", id, b.ID())
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.GossipPort = 70000
	if _, err := peer.New(cfg, peer.Options{}); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("err = %v, want config.ErrInvalid", err)
	}
}

func TestAPI(t *testing.T) {
	agents := peertest.Start(t, 2, peertest.Options{Subnet: "10.5.0.0/24",
		Configure: func(i int, c *config.Config) { c.Location = "branch-7"; c.NotLeaderMaterial = i == 1 }})
	wait.For(t, 20*time.Second, "cluster formed", func() bool { return peertest.SameMembers(agents, agents) })
	base := "http://" + agents[0].APIAddr()

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	resp, body := get("/v1/status")
	var st api.StatusResponse
	if err := json.Unmarshal(body, &st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status: %d %s %v", resp.StatusCode, body, err)
	}
	if st.Node != agents[0].ID() || st.Subnet != "10.5.0.0/24" || st.Location != "branch-7" ||
		st.Addr != "127.0.0.1" || st.Members.Alive != 2 || st.Members.Total != 2 || st.Version != "test" {
		t.Fatalf("status = %+v", st)
	}

	resp, body = get("/v1/members")
	var ms []api.MemberInfo
	if err := json.Unmarshal(body, &ms); err != nil || resp.StatusCode != 200 || len(ms) != 2 {
		t.Fatalf("members: %d %s %v", resp.StatusCode, body, err)
	}
	for _, m := range ms {
		self := m.Node == agents[0].ID()
		if m.Self != self || m.Status != "alive" || m.Subnet != "10.5.0.0/24" || m.Addr != "127.0.0.1" ||
			m.NotLeaderMaterial == self || m.Priority != "none" || m.Version != peer.ContentProtocolVersion {
			t.Errorf("member %+v", m)
		}
	}

	if _, body = get("/v1/status?pretty"); !strings.Contains(string(body), "\n  \"node\"") {
		t.Errorf("?pretty not indented: %s", body)
	}
	if resp, body = get("/metrics"); resp.StatusCode != 200 || !strings.Contains(string(body), `redleader_members{status="alive"} 2`) {
		t.Errorf("metrics: %d %s", resp.StatusCode, body)
	}

	// Wrong methods and unknown paths answer an ErrorResponse; GET
	// endpoints also serve HEAD.
	for _, tc := range []struct {
		method, path string
		status       int
		allow, error string
	}{
		{"GET", "/v1/nope", http.StatusNotFound, "", "no such endpoint: /v1/nope"},
		{"POST", "/v1/nope", http.StatusNotFound, "", "no such endpoint: /v1/nope"},
		{"POST", "/v1/status", http.StatusMethodNotAllowed, "GET, HEAD", "method POST not allowed"},
		{"DELETE", "/v1/members", http.StatusMethodNotAllowed, "GET, HEAD", "method DELETE not allowed"},
		{"POST", "/v1/policy", http.StatusMethodNotAllowed, "GET, HEAD, PUT", "method POST not allowed"},
		{"GET", "/v1/nlm", http.StatusMethodNotAllowed, "POST", "method GET not allowed"},
		{"PUT", "/v1/probe", http.StatusMethodNotAllowed, "GET, HEAD", "method PUT not allowed"},
		{"HEAD", "/v1/status", http.StatusOK, "", ""},
		{"HEAD", "/v1/members", http.StatusOK, "", ""},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		var e api.ErrorResponse
		switch {
		case r.StatusCode != tc.status || r.Header.Get("Allow") != tc.allow:
			t.Errorf("%s %s: %d, Allow %q; want %d, Allow %q", tc.method, tc.path, r.StatusCode, r.Header.Get("Allow"), tc.status, tc.allow)
		case tc.error == "" && len(b) != 0:
			t.Errorf("%s %s: body %q", tc.method, tc.path, b)
		case tc.error != "" && (json.Unmarshal(b, &e) != nil || e.Error != tc.error ||
			r.Header.Get("Content-Type") != "application/json"):
			t.Errorf("%s %s: %s body %q, want error %q", tc.method, tc.path, r.Header.Get("Content-Type"), b, tc.error)
		}
	}
}
