//go:build race

package digest

// raceEnabled: timings mean nothing under the race detector.
const raceEnabled = true
