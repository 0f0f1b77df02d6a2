"""What a figure rests on, in the words every table, report badge and JSON result uses (one place, no imports).

- modelled: moelab's cost engine, at the candidates' scale;
- measured: measured at the candidates' own scale;
- measured at tiny scale: moelab's tiny models measured on this machine, thousands of times smaller;
- modelled + measured at tiny scale: a modelled figure checked against such a measurement;
- prior: the seeds' guidance or the workload's own statement.
"""

BASIS_MODELLED = "modelled"
BASIS_MEASURED = "measured"
BASIS_TINY = "measured at tiny scale"
BASIS_MODELLED_TINY = "modelled + measured at tiny scale"
BASIS_PRIOR = "prior"
BASES = (BASIS_MODELLED, BASIS_MEASURED, BASIS_TINY, BASIS_MODELLED_TINY, BASIS_PRIOR)
