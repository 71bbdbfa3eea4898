"""The Salesforce CDC producer: ``producers.salesforce.cdc.run(cfg, stop)`` (``sfsync run salesforce-producer``).

Pure logic (event -> envelopes, gap repair and catch-up queries, stored positions) lives in
:mod:`producers.salesforce.events`; the CometD/Kafka adapter in :mod:`producers.salesforce.cdc`.
"""
