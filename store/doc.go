// Package store keeps netdiag's state in one bbolt file: findings, alerts
// seen, the audit log, the outbox of chat messages not yet delivered, and the
// digest state, so that a restart loses nothing.
package store
