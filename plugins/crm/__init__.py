"""CRM backends (HubSpot, Salesforce) and the ``lookup_customer`` tool."""
