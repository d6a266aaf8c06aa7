"""Provider-neutral core: messages, rules, classifiers, plans, the pipeline and the ledger.

Nothing here imports `mailtriage.connectors` or `mailtriage.sandbox`.
"""
