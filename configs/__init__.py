"""memjax's experiment configs; installed as ``memjax.configs`` so the scripts find them by name
(``memjax-audit --config=digits_audit``)."""
