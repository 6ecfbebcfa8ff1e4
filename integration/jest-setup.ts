// Integration tests talk to a real broker: give them room.
jest.setTimeout(180_000);
