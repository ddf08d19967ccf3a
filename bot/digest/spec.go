package digest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	// The bot may run in an image without /usr/share/zoneinfo; a digest's
	// time zone must resolve the same everywhere.
	_ "time/tzdata"
)

// Spec is one configured digest: when it is due, where it goes, and whether
// a sweep of the nodes runs before it.
type Spec struct {
	// Name tells digests apart in logs and in the store; see Key.
	Name string `json:"name,omitempty"`
	// Schedule is a standard 5-field cron expression, e.g. "0 9 * * 1-5".
	Schedule string `json:"schedule"`
	// TZ is the IANA time zone the schedule is read in, e.g. "Europe/Berlin";
	// empty means UTC.
	TZ      string `json:"tz,omitempty"`
	Channel string `json:"channel"`
	// Sweep asks for a sweep of every node before the digest is built.
	Sweep bool `json:"sweep,omitempty"`
}

// Key names the digest for the store's digest state: Name if set, otherwise
// the channel and the schedule, which together tell configured digests apart.
func (s Spec) Key() string {
	if s.Name != "" {
		return s.Name
	}
	return s.Channel + " " + s.Schedule
}

// parser reads exactly the five standard fields. Descriptors (@daily) and a
// CRON_TZ= prefix are left out on purpose: the time zone has its own field.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

const acceptedSchedule = `accepted: five cron fields "minute hour day-of-month month day-of-week", e.g. "0 9 * * 1-5"`

// Validate checks every field and reports all that are wrong, each named as
// in the configuration file.
func (s Spec) Validate() error {
	_, _, err := s.compile()
	return err
}

// compile parses the schedule and loads the time zone.
func (s Spec) compile() (cron.Schedule, *time.Location, error) {
	var errs []error
	sched, err := parseSchedule(s.Schedule)
	if err != nil {
		errs = append(errs, err)
	}
	loc, err := loadTZ(s.TZ)
	if err != nil {
		errs = append(errs, err)
	}
	switch {
	case strings.TrimSpace(s.Channel) == "":
		errs = append(errs, errors.New(`channel: empty; accepted: a Slack channel name such as "#netops" or a channel ID such as "C0123456789"`))
	case strings.ContainsAny(s.Channel, " \t\r\n"):
		errs = append(errs, fmt.Errorf(`channel %q: contains white space; accepted: a Slack channel name such as "#netops" or a channel ID such as "C0123456789"`, s.Channel))
	}
	if sched != nil && loc != nil {
		// A schedule such as "0 0 30 2 *" parses but never fires; cron gives
		// up after five years and returns the zero time.
		ref := time.Date(2000, time.January, 1, 0, 0, 0, 0, loc)
		if sched.Next(ref).IsZero() {
			errs = append(errs, fmt.Errorf("schedule %q: never fires (no such date); %s", s.Schedule, acceptedSchedule))
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return sched, loc, nil
}

func parseSchedule(expr string) (cron.Schedule, error) {
	e := strings.TrimSpace(expr)
	switch {
	case e == "":
		return nil, fmt.Errorf("schedule: empty; %s", acceptedSchedule)
	case strings.HasPrefix(e, "TZ=") || strings.HasPrefix(e, "CRON_TZ="):
		return nil, fmt.Errorf("schedule %q: a time zone prefix is not accepted here, give it in tz; %s", expr, acceptedSchedule)
	case strings.HasPrefix(e, "@"):
		return nil, fmt.Errorf("schedule %q: descriptors such as @daily are not accepted; %s", expr, acceptedSchedule)
	}
	sched, err := parser.Parse(e)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %v; %s", expr, err, acceptedSchedule)
	}
	return sched, nil
}

func loadTZ(name string) (*time.Location, error) {
	const accepted = `accepted: an IANA time zone name such as "Europe/Berlin" or "UTC", or empty for UTC`
	switch name {
	case "":
		return time.UTC, nil
	case "Local":
		// Local is whatever the bot's machine says, which differs between a
		// laptop and a container: not what a channel's users expect.
		return nil, fmt.Errorf("tz %q: the machine's local zone is not accepted; %s", name, accepted)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("tz %q: unknown time zone; %s", name, accepted)
	}
	return loc, nil
}
