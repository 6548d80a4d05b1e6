"""The index layout: archive pages, an index of generation-numbered deltas and
checkpoints, and one acknowledgement record per receiver (doc/protocol.rst,
"The index layout")."""
