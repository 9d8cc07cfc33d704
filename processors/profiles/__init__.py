"""Card holders' rolling profiles: the fold, its Redis store and views, and the faust agent.

Where a change goes:

- what one purchase adds to a profile (spend, visits, groups, nutrition, points): :mod:`.rules`
  (the delta) and :mod:`.fold` (the pure fold ``fold(profile, purchase) -> profile``);
- how a profile is laid out in Redis: :mod:`.keys`; the Lua scripts that apply a delta or a consent
  change atomically: :mod:`.scripts` and ``lua/``; the store itself: :mod:`.store`;
- what each role may see of a profile: :mod:`.views`; households: :mod:`.households`;
- the faust agent and its batch consumer: :mod:`.agent`, :mod:`.consumer`, with its metrics and
  readiness wiring in :mod:`.observe`.
"""
