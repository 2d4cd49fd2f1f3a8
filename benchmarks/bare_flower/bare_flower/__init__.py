"""A bare Flower app: the reference for fedcrm's simulation overhead."""
