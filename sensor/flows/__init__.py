"""Flow records: built in the fast path (ext/flows.pxi) or the reference table, stored, exported, profiled."""
