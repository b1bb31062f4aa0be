// Package discovery finds LAN peers: agents of the same subnet (a small
// multicast beacon used to join the gossip pool) and holders of content
// segments (MS-PCCRD, WS-Discovery Probe/ProbeMatch over SOAP-over-UDP).
package discovery
