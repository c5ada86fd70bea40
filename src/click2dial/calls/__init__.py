"""The click-to-dial domain: what a call request may say (:mod:`.rules`), what
an integrator may use (:mod:`.policy`), the two-leg call control, end reasons
and CDRs.

Nothing here knows about HTTP; the API and the SIP edge hand plain values in
and get plain values back.
"""
