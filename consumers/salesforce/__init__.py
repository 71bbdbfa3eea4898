"""The Salesforce sink (``sfsync run salesforce-sink``): :class:`consumers.salesforce.sink.SalesforceSink`.

Pure logic (batch planning, per-record outcomes, the error classification table) lives in
:mod:`consumers.salesforce.plan` and :mod:`consumers.salesforce.errors`.
"""

from consumers.salesforce.sink import BudgetExhausted, CredentialsRefused, SalesforceSink

__all__ = ["BudgetExhausted", "CredentialsRefused", "SalesforceSink"]
