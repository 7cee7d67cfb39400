"""Protocol adapters: translate wire protocols into ShareFS calls, and the appliance runner."""
