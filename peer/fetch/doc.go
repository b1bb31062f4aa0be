// Package fetch is the data path's download side (issue #10).
//
// Pipeline is the jobs.Runner of the agent: for each segment of a job's
// content it takes the blocks from the local segment cache, then from LAN
// holders (MS-PCCRD probe, MS-PCCRR fetch from several peers at once), then
// from the origin in large ranges; every block is verified before it is
// stored or written, and the job's data file is assembled in order and
// checked against the content's anchors. It consumes small interfaces
// (Cache, Prober, BlockFetcher, Limiter, Role, Catalog, OriginAccess).
//
// Origin access is the one place the agent talks to the HTTP(S) server a
// download comes from:
//
//   - Origin.Identify learns what a URL names without starting a download:
//     a HEAD gives the length, the strong validator (ETag, else
//     Last-Modified), Range support and any digest the origin vouches for
//     (Repr-Digest, Digest, Content-MD5); an MS-PCCRTP origin (peer/origin,
//     IIS with BranchCache) also answers a PeerDist GET with the content
//     information, so the segment IDs are known up front. The result is an
//     Identity with the content Key (scheme + host + path + validator +
//     length: the query is dropped, signed URLs differ per machine).
//   - Origin.NewReader reads the content in large ranges, one request per
//     range (a segment or more, never a request per block), checking the
//     validator on every answer so that a file that changes mid-download is
//     an error (ErrChanged). An origin that ignores Range is detected once
//     per Identity and then read as one sequential stream the Reader cuts
//     the asked ranges from, so the pipeline asks for ranges either way.
//   - CheckDemandURL is the Red Leader's filter for URLs that peers demand:
//     http(s) only, never loopback, link-local, unspecified, multicast or the
//     agent's own addresses.
//
// Outbound proxies are honoured: HTTP_PROXY, HTTPS_PROXY and NO_PROXY from
// the environment, unless Options.Proxy names one. Failures are sentinel
// errors (ErrNotFound, ErrRefused, ErrTLS, ErrChanged, ErrTooShort, ...)
// wrapped in one line a CLI can print; URLs in errors and logs never carry
// their query or user info.
//
// See DESIGN.md for the pipeline's states and rules.
package fetch
