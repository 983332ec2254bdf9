"""Examples: a policy file and a web app using accessaudit (exercised by the tests)."""
