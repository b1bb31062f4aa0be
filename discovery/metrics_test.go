package discovery

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// metricValue returns the sum of the counter values (or histogram sample
// counts) c collects, read through a private registry.
func metricValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func TestNewMetricsRegistersOnce(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a := NewMetrics(reg)
	b := NewMetrics(reg) // a second agent in the same process shares the series
	a.ProbesSent.Inc()
	b.ProbesSent.Inc()
	a.MalformedDropped.WithLabelValues(dropForeign).Inc()
	a.FirstMatchLatency.Observe(0.01)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{
		"redleader_discovery_probes_sent_total",
		"redleader_discovery_malformed_dropped_total",
		"redleader_discovery_probe_first_match_seconds",
	} {
		if !names[n] {
			t.Errorf("metric %s not gathered (have %v)", n, names)
		}
	}
	if v := metricValue(t, b.ProbesSent); v != 2 {
		t.Errorf("shared probes sent = %v, want 2", v)
	}
}
