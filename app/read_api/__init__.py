"""The read API: a customer (search, lookup, profile, traits, identities, groups), its feed,
groups, the calling key."""
