"""What a study is and holds: the search space, its objectives, the dominance rule and the Pareto pruner, the SQL
store (Alembic migrations in migrations/) and the one view of a study's results every reader shares."""
