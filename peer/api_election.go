package peer

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/shaping"
)

// API errors.
var (
	errNoElection   = errors.New("election not running (agent re-homing?)")
	errUnauthorized = errors.New("missing or wrong API token (the CLI reads it from the data dir)")
)

// addElectionRoutes registers the election endpoints.
func (a *Agent) addElectionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathEvents, func(w http.ResponseWriter, r *http.Request) {
		n := a.Election()
		if n == nil {
			writeError(w, r, http.StatusServiceUnavailable, errNoElection)
			return
		}
		evs := n.State().Events
		out := make([]api.EventInfo, 0, len(evs))
		for _, e := range evs {
			out = append(out, api.EventInfo{Seq: e.Seq, Time: e.Time, Kind: string(e.Kind), Node: e.Node,
				Epoch: e.Epoch, Severity: string(e.Severity), Reason: e.Reason})
		}
		writeJSON(w, r, http.StatusOK, out)
	})
	mux.HandleFunc("GET "+api.PathPolicy, func(w http.ResponseWriter, r *http.Request) {
		n := a.Election()
		if n == nil {
			writeError(w, r, http.StatusServiceUnavailable, errNoElection)
			return
		}
		writeJSON(w, r, http.StatusOK, policyInfo(n.State().Policy))
	})
	mux.HandleFunc("PUT "+api.PathPolicy, func(w http.ResponseWriter, r *http.Request) {
		a.mutating(w, r, a.putPolicy)
	})
	mux.HandleFunc("POST "+api.PathNLM, func(w http.ResponseWriter, r *http.Request) {
		a.mutating(w, r, a.postNLM)
	})
}

func policyInfo(p election.Policy) api.PolicyInfo {
	return api.PolicyInfo{Version: p.Version, LeaderRate: p.LeaderRate, PeerRate: p.PeerRate, LANRate: p.LANRate}
}

// mutating checks the token and decodes nothing itself; h gets the body.
func (a *Agent) mutating(w http.ResponseWriter, r *http.Request, h func(context.Context, []byte) (any, int, error)) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(tok), []byte(a.token)) != 1 {
		writeError(w, r, http.StatusUnauthorized, errUnauthorized)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	out, status, err := h(ctx, body)
	if err != nil {
		writeError(w, r, status, err)
		return
	}
	writeJSON(w, r, http.StatusOK, out)
}

func (a *Agent) putPolicy(ctx context.Context, body []byte) (any, int, error) {
	var in api.PolicyInfo
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("bad policy: %w", err)
	}
	n := a.Election()
	if n == nil {
		return nil, http.StatusServiceUnavailable, errNoElection
	}
	cur := n.State().Policy
	if in.Version != 0 && in.Version != cur.Version {
		return nil, http.StatusConflict, fmt.Errorf("policy is at version %d, not %d", cur.Version, in.Version)
	}
	next := cur
	for key, v := range map[string]struct {
		val string
		dst *string
	}{"leader_rate": {in.LeaderRate, &next.LeaderRate}, "peer_rate": {in.PeerRate, &next.PeerRate}, "lan_rate": {in.LANRate, &next.LANRate}} {
		if v.val == "" {
			continue
		}
		r, err := shaping.ParseRate(v.val)
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("%s: %w", key, err)
		}
		*v.dst = r.String()
	}
	cmd := election.NewSetPolicyCommand(uuid.NewString(), time.Now(), next, cur.Version)
	if _, err := n.Apply(ctx, cmd); err != nil {
		return nil, applyStatus(err), fmt.Errorf("policy not committed: %w", err)
	}
	return policyInfo(n.State().Policy), 0, nil
}

func (a *Agent) postNLM(ctx context.Context, body []byte) (any, int, error) {
	var in api.NLMRequest
	if err := json.Unmarshal(body, &in); err != nil || in.Node == "" {
		return nil, http.StatusBadRequest, errors.New(`bad request: want {"node": "...", "on": true|false}`)
	}
	n := a.Election()
	if n == nil {
		return nil, http.StatusServiceUnavailable, errNoElection
	}
	node, err := a.resolveNode(in.Node)
	if err != nil {
		return nil, http.StatusNotFound, err
	}
	reason := in.Reason
	if reason == "" {
		reason = "set by an administrator"
	}
	cmd := election.NewMarkCommand(uuid.NewString(), time.Now(), node, election.MarkAdmin, 0, reason)
	if !in.On {
		cmd = election.NewUnmarkCommand(uuid.NewString(), time.Now(), node, reason)
	}
	if _, err := n.Apply(ctx, cmd); err != nil {
		return nil, applyStatus(err), fmt.Errorf("mark not committed: %w", err)
	}
	return api.NLMResponse{Node: node, NotLeaderMaterial: in.On}, 0, nil
}

// applyStatus is the API status of a command the election did not commit:
// 403 when the cluster refuses it for good (an admin command in an open
// cluster, a request its RPC refuses), 503 otherwise (no leader now).
func applyStatus(err error) int {
	if errors.Is(err, election.ErrAdminRefused) || errors.Is(err, election.ErrRefused) {
		return http.StatusForbidden
	}
	return http.StatusServiceUnavailable
}

// resolveNode accepts a node ID, a unique ID prefix or a unique name.
func (a *Agent) resolveNode(s string) (string, error) {
	var hits []string
	for _, m := range a.Members() {
		if m.Node == s {
			return s, nil
		}
		if strings.HasPrefix(m.Node, s) || m.Meta.Name == s {
			hits = append(hits, m.Node)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		return "", fmt.Errorf("no member %q", s)
	}
	return "", fmt.Errorf("%q matches %d members: use the full node ID", s, len(hits))
}

func writeError(w http.ResponseWriter, r *http.Request, status int, err error) {
	writeJSON(w, r, status, api.ErrorResponse{Error: err.Error()})
}
