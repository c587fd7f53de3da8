"""Ablation studies (`crossvit ablate`): a grid of model options trained over several seeds.
`specs` reads a study and turns it into training runs; `report` reads the finished runs back
into a table and a plot."""
