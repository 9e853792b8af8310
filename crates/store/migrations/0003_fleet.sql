-- Fleets share one queue (SPEC §6; issue #6). Portable as 0001.
--
-- `node`: the node that accepted the message and holds its body in its
-- local spool; on PostgreSQL only that node claims it (NULL: any node,
-- rows from before this migration). `lease_owner`: the process that holds
-- the lease, so that a runner whose lease expired and was taken over
-- cannot release the new owner's lease.
ALTER TABLE queue_messages ADD COLUMN node TEXT;
ALTER TABLE queue_messages ADD COLUMN lease_owner TEXT;
