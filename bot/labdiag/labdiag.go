// Package labdiag answers the bot's questions on the fault lab, so the bot
// runs end to end (the demo, its tests) on a machine with no cluster: the
// lab's pods and nodes stand for the cluster's.
package labdiag

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/lab"
)

// Diagnoser diagnoses lab targets in this process.
type Diagnoser struct {
	// Instance is the lab's instance name ("" for the default).
	Instance string
	// PcapDir is where captures are written before the bot stores them
	// (default the system's temporary folder).
	PcapDir string
	Log     *slog.Logger
}

// Diagnose answers q on the lab.
func (d *Diagnoser) Diagnose(ctx context.Context, q bot.Question, progress func(string)) (*bot.Answer, error) {
	progress("resolving " + q.Target())
	req, err := d.request(q)
	if err != nil {
		return nil, err
	}
	return bot.RunRequest(ctx, req, q, diagnose.LocalRunner{}, d.PcapDir, d.Log, progress)
}

// Check resolves the question on the lab's state without running it.
func (d *Diagnoser) Check(ctx context.Context, q bot.Question) error {
	_, err := d.request(q)
	return err
}

func (d *Diagnoser) request(q bot.Question) (*diagnose.Request, error) {
	st, err := lab.GetStatus(d.Instance)
	if err != nil {
		return nil, fmt.Errorf("the lab: %w", err)
	}
	name := q.Name
	if q.Namespace != "" {
		name = q.Namespace + "/" + q.Name
	}
	req, err := labview.Request(st, q.Kind, name, q.To, q.DNS)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bot.ErrQuestion, err)
	}
	return req, nil
}
