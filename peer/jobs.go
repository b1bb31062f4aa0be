package peer

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/peer/jobs"
)

// agentJobs is the agent's download queue and the runner it uses: the
// per-segment pipeline of peer/fetch (cache → LAN holders → origin) on the
// agent's parts (datapath.go).
type agentJobs struct {
	m    *jobs.Manager
	data *dataPath
}

// startJobs opens the queue under data_dir/jobs (jobs that were running
// when the agent stopped resume) and starts it.
func (a *Agent) startJobs() error {
	log := a.log.With("component", "jobs")
	data, err := a.newDataPath(log)
	if err != nil {
		return err
	}
	m, err := jobs.New(jobs.Config{
		Dir:        filepath.Join(a.cfg.DataDir, "jobs"),
		MaxRunning: a.cfg.Jobs.MaxRunning,
		Retention:  a.cfg.Jobs.Retention,
		Runner:     data.pipe,
		Rank:       rankPublisher{a},
		Logger:     log,
	})
	if err != nil {
		data.Close()
		return fmt.Errorf("open jobs: %w", err)
	}
	if err := a.reg.Register(newJobsCollector(m, data.single.DemandBytes)); err != nil {
		m.Close()
		data.Close()
		return fmt.Errorf("jobs metrics: %w", err)
	}
	a.jobs = &agentJobs{m: m, data: data}
	m.Start()
	return nil
}

// stopJobs stops the running jobs (they resume at the next start).
func (a *Agent) stopJobs() error {
	if a.jobs == nil {
		return nil
	}
	err := a.jobs.m.Close()
	a.jobs.data.Close()
	return err
}

// Jobs is the agent's download queue (nil before Start).
func (a *Agent) Jobs() *jobs.Manager {
	if a.jobs == nil {
		return nil
	}
	return a.jobs.m
}

// publishRankInputs publishes the ranking inputs the jobs decide: the
// highest priority of the active jobs and the bytes held of that job's
// content (meta.go's Priority and Progress).
func (a *Agent) publishRankInputs(p Priority, progress uint64) {
	if a.jobs != nil && a.jobs.data != nil {
		d := a.jobs.data
		d.rankMu.Lock()
		d.jobsPriority, d.jobsProgress = p, progress
		// The Red Leader also counts the demands it serves.
		p, progress = d.rankLocked()
		d.rankMu.Unlock()
	}
	a.updateMeta(func(m *Meta) { m.Priority, m.Progress = p, progress })
	a.publishMeta()
}

// rankPublisher hands the jobs' ranking inputs to the agent.
type rankPublisher struct{ a *Agent }

func (r rankPublisher) PublishRank(p election.Priority, progress uint64) {
	r.a.publishRankInputs(p, progress)
}

// jobsCollector exports the jobs' metrics, read at scrape time.
type jobsCollector struct {
	m                                       *jobs.Manager
	demand                                  func() jobs.Bytes
	state, bytes, originReason, demandBytes *prometheus.Desc
}

func newJobsCollector(m *jobs.Manager, demand func() jobs.Bytes) *jobsCollector {
	return &jobsCollector{m: m, demand: demand,
		demandBytes: prometheus.NewDesc("redleader_demand_bytes_total",
			"Bytes this agent fetched as Red Leader for members' demands, outside its own jobs (into its cache), by source (cache, peer, origin).",
			[]string{"source"}, nil),
		state: prometheus.NewDesc("redleader_jobs", "Download jobs by state.", []string{"state"}, nil),
		bytes: prometheus.NewDesc("redleader_job_bytes_total",
			"Bytes received by download jobs since the agent started, by source (cache, peer, origin).", []string{"source"}, nil),
		originReason: prometheus.NewDesc("redleader_job_origin_bytes_total",
			"Bytes download jobs received from the origin since the agent started, by why they crossed the WAN.", []string{"reason"}, nil),
	}
}

func (c *jobsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.bytes
	ch <- c.originReason
	ch <- c.demandBytes
}

func (c *jobsCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.m.Counts()
	for _, s := range jobs.States {
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
	t := c.m.Totals()
	for src, n := range map[jobs.Source]int64{jobs.SourceCache: t.Cache, jobs.SourcePeer: t.Peers, jobs.SourceOrigin: t.Origin} {
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(n), string(src))
	}
	for _, r := range jobs.Reasons {
		ch <- prometheus.MustNewConstMetric(c.originReason, prometheus.CounterValue, float64(t.OriginByReason[r]), string(r))
	}
	d := c.demand()
	for src, n := range map[jobs.Source]int64{jobs.SourceCache: d.Cache, jobs.SourcePeer: d.Peers, jobs.SourceOrigin: d.Origin} {
		ch <- prometheus.MustNewConstMetric(c.demandBytes, prometheus.CounterValue, float64(n), string(src))
	}
}

// errNoJobs: the queue is not open (the agent is starting or stopping).
var errNoJobs = errors.New("jobs not running (agent starting or stopping)")
