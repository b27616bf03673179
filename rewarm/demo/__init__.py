"""The demo: the rewarm study in miniature, offline (``rewarm demo``, what ``make demo`` runs).

Owns ``rewarm demo`` (``cli``): corpora from the running Python's standard library (``corpus``, ``stdlib_text``), a
tokenizer and a tiny base model (``tokenizer``, ``base``), its two downstream tasks (``tasks``), the study's runs
(``study``, ``pipeline``), their findings and table (``findings``, ``table``).

May import: the config, errors, resources, the study, training and the capabilities below it. Nothing heavy at
package level.
"""
