"""Ablation studies (`crossvit ablate`): a grid of model options trained over several seeds.
`specs` reads a study and turns it into training runs, `runner` trains them (shared among
torchrun's processes), `report` reads the finished runs back into a table and a plot."""
