import os

# Nothing in the test suite may reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
