package main

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestLimitMemoryWhileStarting(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	origGC := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetMemoryLimit(orig); debug.SetGCPercent(origGC) })
	for _, env := range []string{"GOMEMLIMIT", "GOGC"} {
		if v, ok := os.LookupEnv(env); ok {
			t.Setenv(env, v) // restored after the test
			if err := os.Unsetenv(env); err != nil {
				t.Fatal(err)
			}
		}
	}
	settle := limitMemory()
	if got := debug.SetMemoryLimit(-1); got != startupMemoryLimit {
		t.Fatalf("limit while starting %d, want %d", got, startupMemoryLimit)
	}
	settle()
	if got := debug.SetMemoryLimit(-1); got != orig {
		t.Errorf("limit after start %d, want %d as before", got, orig)
	}
	if got := debug.SetGCPercent(origGC); got != steadyGCPercent {
		t.Errorf("GC percent after start %d, want %d", got, steadyGCPercent)
	}
}

func TestLimitMemoryLeavesSettingsAlone(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	origGC := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetMemoryLimit(orig); debug.SetGCPercent(origGC) })
	for _, env := range []string{"GOMEMLIMIT", "GOGC"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, "100")
			settle := limitMemory()
			if got := debug.SetMemoryLimit(-1); got != orig {
				t.Errorf("%s set: limit changed from %d to %d", env, orig, got)
			}
			settle()
			if got := debug.SetGCPercent(100); got != 100 {
				t.Errorf("%s set: GC percent changed to %d", env, got)
			}
		})
	}
}
