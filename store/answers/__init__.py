"""The read side's answers, each declared once (docs/architecture.md, "Where each answer is declared").

One module per answer (`feed_item.py`, `profile.py`, `customer_list_item.py`, `group.py`):
its fields, each with the SQL expression Postgres builds it from, the response field it is
documented as, and its description. The SQL `json_build_object` a read runs and the
marshmallow schema the OpenAPI document shows both come from that one declaration
(`declared.py`), so they cannot drift apart.
"""
