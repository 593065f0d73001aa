"""Handlers of the op table (:mod:`neuralign.perm._rules`), one module per op family.

``types`` holds the infos and the rule row; ``common`` the helpers handlers share.
"""
