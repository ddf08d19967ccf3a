// Package logs makes netdiag's logger: text lines on stderr, the level
// from NETDIAG_LOG_LEVEL (debug, info, warn, error; default info), the
// same for every netdiag program.
package logs

import (
	"io"
	"log/slog"
	"os"
	"strings"
)

// New logs to w at the level NETDIAG_LOG_LEVEL names.
func New(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToLower(os.Getenv("NETDIAG_LOG_LEVEL")) {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
