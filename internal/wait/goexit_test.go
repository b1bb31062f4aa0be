package wait

import "runtime"

func runtimeGoexit() { runtime.Goexit() }
