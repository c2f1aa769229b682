"""The training objectives: one module each behind one interface
(:class:`~swclip_core.objectives.base.Objective`), listed by name in
:mod:`~swclip_core.objectives.registry`."""
