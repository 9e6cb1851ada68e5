"""Offline stand-ins for the real data, procedural: an MVTec-AD-layout dataset (:mod:`.scenes`) and DTD-layout
textures (:mod:`.textures`)."""
