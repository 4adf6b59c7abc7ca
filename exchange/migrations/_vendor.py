"""A migration operation that touches only one database vendor's schema."""

from __future__ import annotations

from django.db import migrations


class OnVendor(migrations.operations.base.Operation):
    """``operations`` applied to the database only on ``vendor`` ("sqlite", "postgresql"); the
    state is left alone (use inside ``SeparateDatabaseAndState``, whose state operations say
    what the models become on every database)."""

    reduces_to_sql = False

    def __init__(self, vendor: str, operations: list) -> None:
        self.vendor = vendor
        self.operations = operations

    def deconstruct(self):
        return self.__class__.__qualname__, [self.vendor, self.operations], {}

    def state_forwards(self, app_label, state):
        for operation in self.operations:
            operation.state_forwards(app_label, state)

    def _run(self, app_label, schema_editor, from_state, backwards: bool) -> None:
        if schema_editor.connection.vendor != self.vendor:
            return
        states = [from_state]
        for operation in self.operations:
            state = states[-1].clone()
            operation.state_forwards(app_label, state)
            states.append(state)
        # each operation with the state before it and after it: ``states`` holds one more, the first
        steps = list(zip(self.operations, states, states[1:], strict=False))
        for operation, before, after in reversed(steps) if backwards else steps:
            if backwards:
                operation.database_backwards(app_label, schema_editor, after, before)
            else:
                operation.database_forwards(app_label, schema_editor, before, after)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._run(app_label, schema_editor, from_state, backwards=False)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        # Backwards, ``to_state`` is the state before these operations.
        self._run(app_label, schema_editor, to_state, backwards=True)

    def describe(self):
        return f"On {self.vendor}: " + "; ".join(op.describe() for op in self.operations)
