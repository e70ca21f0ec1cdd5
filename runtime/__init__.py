"""The ground floor every gridpay process shares: process bootstrap (reactor, signals), the ops HTTP
site (/metrics, /healthz, /readyz), worker processes, GC settling, bulk SQL, logging set-up.

It imports only ``config`` and ``iso8583_specs`` (masking); everything above may import it.
"""
