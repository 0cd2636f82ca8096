"""The GEPA engine: a per-instance Pareto frontier of prompt candidates, reflective mutation and
merge, under a hard budget. The pure parts (frontier, selection, acceptance, merge, budget) do no
I/O, so every rule of the algorithm is unit-tested on its own."""
