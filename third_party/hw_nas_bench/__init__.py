"""Reader for the official HW-NAS-Bench pickle (restricted unpickler + safe .npz cache)."""
