package service

// WindowsSpec is what the Windows service manager is told of the service.
type WindowsSpec struct {
	DisplayName string
	Description string
	// Args follow the binary on the service's command line: the hidden
	// `redleader service run`, which serves the service manager's controls.
	Args []string
}

// WindowsServiceSpec is the Windows service running the agent with the
// config file cfgPath and the data dir dataDir (%ProgramData%\redleader).
func WindowsServiceSpec(cfgPath, dataDir string) WindowsSpec {
	return WindowsSpec{
		DisplayName: "redleader agent",
		Description: "redleader peer-to-peer content distribution agent (BranchCache-compatible). Logs: Application Event Log, source redleader.",
		Args:        []string{"service", "run", "--config", cfgPath, "--data-dir", dataDir},
	}
}
