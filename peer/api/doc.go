// Package api is the agent's local HTTP API as a client sees it: the wire
// types of its requests and answers, and a typed Client. It needs no agent
// code; package peer serves these types.
//
// # Client
//
//	c := api.New("127.0.0.1:7380")                      // read endpoints
//	c := api.New(addr, api.WithToken(tok))              // + mutating ones (peer.ReadToken(dataDir))
//	c := api.New(addr, api.WithHTTPClient(h.HTTPClient())) // own transport (lab namespaces)
//
// One method per endpoint, each bounded by its context:
//
//	Status(ctx) (StatusResponse, error)                 GET  /v1/status
//	Members(ctx) ([]MemberInfo, error)                  GET  /v1/members
//	Events(ctx) ([]EventInfo, error)                    GET  /v1/events
//	Policy(ctx) (PolicyInfo, error)                     GET  /v1/policy
//	SetPolicy(ctx, PolicyInfo) (PolicyInfo, error)      PUT  /v1/policy (token)
//	NLM(ctx, NLMRequest) (NLMResponse, error)           POST /v1/nlm (token)
//	Probe(ctx, segment, blocks) (ProbeResponse, error)  GET  /v1/probe?segment=HEX&blocks=N
//	Metrics(ctx) ([]byte, error)                        GET  /metrics (Prometheus text)
//	SubmitJob(ctx, JobRequest) (JobInfo, error)         POST /v1/jobs (token)
//	Jobs(ctx) ([]JobInfo, error)                        GET  /v1/jobs
//	Job(ctx, id, brief) (JobDetail, error)              GET  /v1/jobs/{id}[?brief]
//	DeleteJob(ctx, id) (JobDeleteResponse, error)       DELETE /v1/jobs/{id} (token)
//	JobContent(ctx, id) (io.ReadCloser, int64, error)   GET  /v1/jobs/{id}/content (token, streamed)
//	Reload(ctx) (ReloadResponse, error)                 POST /v1/reload (token)
//	Throughput(ctx, since) (ThroughputResponse, error)  GET  /v1/throughput[?since=SEQ]
//
// and Do(ctx, method, path, in, out) for any other endpoint: in is nil (no
// body), an io.Reader (sent as is) or a value sent as JSON; out is nil
// (discarded), a *[]byte (raw answer) or a value the JSON answer is decoded
// into.
//
// # Errors
//
// Every method's error is one of:
//
//   - errors.Is(err, ErrNoAgent): nothing accepts connections on the
//     address (no agent running there);
//   - errors.Is(err, ErrTimeout): no answer before the context's deadline
//     or the HTTP client's timeout;
//   - errors.As(err, &e) with e *Error: the agent answered an error status;
//     e.Message is the "error" field of its ErrorResponse body (or the
//     status text). A missing or wrong token is an *Error with Status 401;
//   - anything else (a bad JSON answer, an answer over the size limit, a
//     cancelled context) wrapped with the method, path and address.
//
// Answers are read up to 32 MiB (64 KiB for error bodies).
//
// # Server side
//
// Every error answer is an ErrorResponse: 404 for an unknown path, 405 with
// an Allow header for a wrong method (GET endpoints also serve HEAD), 401
// for a mutating call without the right token.
package api
