//! Named tests, several per rule of the permission engine.
