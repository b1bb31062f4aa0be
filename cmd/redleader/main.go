// Command redleader is the redleader agent and its command-line client.
// main is wiring only: every command is a few lines that call packages.
package main

import "os"

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
