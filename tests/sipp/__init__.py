"""sipp scenarios and the harness that runs them against our SIP UA."""
