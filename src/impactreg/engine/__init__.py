"""The registration engine: ``registration`` drives stages, levels and iterations; ``build`` makes
a stage's components from its map through the registries; ``cost`` is the weighted metric sum;
``inputs`` checks and converts what the user gives; ``outputs`` stages and writes the files."""
