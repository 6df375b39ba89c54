"""The incident desk: incidents, their response clock, and the notifications that go out about them."""
