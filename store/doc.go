// Package store keeps netdiag's state in one bbolt file: findings, alerts
// seen, the audit log, the outbox of chat messages not yet delivered, and the
// digest state, so that a restart loses nothing.
//
// Every write is on disk when its method returns. Findings are listed from
// indexes (by time, target, namespace and node) and short summaries, without
// decoding their evidence, which is kept compressed beside them with the
// pcap. The file says its schema version; Open migrates an older one in a
// single transaction. Sweep applies the retention (Options.MaxAge and
// MaxBytes) and Compact gives the freed room back to the file system; the bot
// calls both now and then.
//
// A file that is not a store, or is damaged, gives a DamagedError naming it;
// one held by another netdiag gives a LockedError after Options.OpenTimeout.
package store
