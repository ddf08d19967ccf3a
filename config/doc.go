// Package config loads netdiag's one YAML file with environment overrides and
// validates it at start, with errors that name the field and what it accepts.
package config
