"""Click2Dial: click-to-dial telephony for CRMs and helpdesks."""

__version__ = "0.1.0"
