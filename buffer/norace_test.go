//go:build !race

package buffer

// raceEnabled: the race detector is on; long tests run a shorter version.
const raceEnabled = false
