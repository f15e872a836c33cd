{
  "key_id": "b600306cfa76723f",
  "signature": "qGRX0NJeOVNVfaVY/sdCI+puisLFHcqEiPNV5hLYdxqEFEksgHaAYqISk4TqBbBF0wTs0hFeU6dWdzkA08dCDg=="
}
