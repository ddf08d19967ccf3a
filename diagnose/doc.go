// Package diagnose is netdiag's brain: the taxonomy as data, the plan of which
// collectors to run for a symptom, the engine that runs a plan through a
// Runner (in process, or a node's agent), and the rules that turn the evidence
// into one Finding with its class, cause, confidence, evidence, what was ruled
// out and what to do next.
package diagnose
