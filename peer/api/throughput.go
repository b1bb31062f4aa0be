package api

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// PathThroughput is the agent's recent throughput (GET): per-second
// samples of its byte counters over the last minutes, for the dashboard.
const PathThroughput = "/v1/throughput"

// ThroughputResponse is the body of GET /v1/throughput[?since=SEQ].
type ThroughputResponse struct {
	// IntervalS is the length of a sample, in seconds.
	IntervalS int `json:"interval_s"`
	// Seq is the sequence number of the newest sample (0: none yet); ask
	// ?since=Seq next time to get only the samples after it.
	Seq uint64 `json:"seq"`
	// Totals are the counters now, since the agent started.
	Totals ThroughputTotals `json:"totals"`
	// Samples are the bytes of each interval, oldest first: all those kept
	// (the last minutes), or those after ?since.
	Samples []ThroughputSample `json:"samples"`
}

// ThroughputTotals are the agent's byte counters since it started.
type ThroughputTotals struct {
	// WAN: bytes received from origins (over the WAN) by this agent's jobs
	// and, as Red Leader, for members' demands.
	WAN int64 `json:"wan"`
	// LANIn: bytes received from LAN peers (MS-PCCRR), the same way.
	LANIn int64 `json:"lan_in"`
	// LANOut: block bytes this agent served to LAN peers (MS-PCCRR).
	LANOut int64 `json:"lan_out"`
	// Cache: bytes found in the agent's own cache, the same way.
	Cache int64 `json:"cache"`
}

// ThroughputSample is the bytes counted during one interval ending at Time.
type ThroughputSample struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	WAN    int64     `json:"wan"`
	LANIn  int64     `json:"lan_in"`
	LANOut int64     `json:"lan_out"`
}

// Throughput is GET /v1/throughput: the samples after since (0: all kept).
func (c *Client) Throughput(ctx context.Context, since uint64) (ThroughputResponse, error) {
	var out ThroughputResponse
	path := PathThroughput
	if since > 0 {
		path += "?since=" + strconv.FormatUint(since, 10)
	}
	return out, c.Do(ctx, http.MethodGet, path, nil, &out)
}
