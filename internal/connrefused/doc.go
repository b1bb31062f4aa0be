// Package connrefused tells a refused TCP connection from other dial
// errors on every OS: the Red Leader's peer-port probe counts a refusal as
// proof that its agent is not running, and the CLI and the data path name
// it in their errors. syscall.ECONNREFUSED alone misses Windows, where
// Winsock reports WSAECONNREFUSED.
package connrefused
