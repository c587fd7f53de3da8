"""Measuring a model rather than running it: multiply-accumulates and parameters counted on the
real network (`flops`), where each branch's CLS token looks and the figures of it (`attention`,
`attention_plot`), timing against timm's model under the same conditions (`benchmark`,
`bench_report`), and the table of every registered variant (`models_table`). The commands
`crossvit models`, `bench` and `attention` print what these modules compute.
"""
