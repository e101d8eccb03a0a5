"""The Sprachenpass: a person's language courses, levels and certificates (category ``language``)."""

#: The record kind as audit rows name it (``fields=("language_pass",)``) and the data category
#: it belongs to. It is not a field of policies/data.yaml, so whoever turns audited fields into
#: categories (the access report's recipients, erasure by category) looks it up here.
ENTITY = "language_pass"
CATEGORY = "language"
RECORD_CATEGORIES: dict[str, str] = {ENTITY: CATEGORY}
